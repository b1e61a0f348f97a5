"""Two-way record sync (issue #13): the pure foundation.

`records` (one canonical Struct per entity), `connector` (the CRM connector contract of
seed 001 as a Protocol) and `errors` (its failures), `options` (a module's direction, delete
policy and field mappings), `fingerprint` (what the sync last wrote, as per-field hashes),
`pairs` (which record here is which record there), `matching` (match before create),
`merge` (one pair's per-field reconciliation), `ops` (the plan's data), `plan` (the
planner) and `review` (a plan as a pre-sync report). No I/O anywhere in this package.
"""
