"""Search: turning FHIR search parameters into SQL over the resource tables.

Today only `_id` and `identifier` are supported (enough for conditional create, update and
delete); the full search API (indexed parameters, chaining, includes) replaces this module's
query compilation without changing its interface.
"""
