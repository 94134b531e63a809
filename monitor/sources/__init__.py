"""Sources: what a tenant's objects are read from, and how a page of them becomes one commit.

Each source owns a disjoint set of mirror families, and a Redis lease (`monitor.leases`) lets only
one runner per (tenant, source) write at a time; the page commit's WATCH covers the rare objects two
sources share (a user's sign-in activity is patched onto the user entity by its own sweep).
"""
