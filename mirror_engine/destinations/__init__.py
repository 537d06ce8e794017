"""Where a mirror is written: one interface, one implementation per kind of store."""
