"""Auth service of the local platform: clients, roles, Hawk, temporary credentials."""
