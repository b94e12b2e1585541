"""The `resnets` subcommands, one module each."""
