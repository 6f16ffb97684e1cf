"""Pure decision functions (no database, no clock of their own), tested in isolation."""
