//! Instance-scoped PostgreSQL store.
