"""Pure domain of the callback pool: value objects, the status table, errors. No I/O."""
