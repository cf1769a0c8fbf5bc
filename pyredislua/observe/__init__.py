"""Operating the primitives: checking a server (``doctor``) and sizing what they keep
(``memory``). Command-line tools over plain reads; nothing here writes to Redis."""
