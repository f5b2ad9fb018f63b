"""The ``dinosae`` subcommands, grouped by what they work on; ``dinosae.cli`` attaches them."""
