"""The shared cache: versioned keys and generations, and per-viewer personalization of cached bodies."""
