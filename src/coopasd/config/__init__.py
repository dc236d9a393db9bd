"""Every setting of a run: frozen dataclasses, loading (file + flags), the documentation `config show` prints."""
