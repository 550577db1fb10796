"""Pure code: event model, validation, canonical form, hashing. Imports nothing of the project."""
