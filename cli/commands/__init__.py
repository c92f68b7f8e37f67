"""Command groups of the ``ordersync`` CLI, one module each."""
