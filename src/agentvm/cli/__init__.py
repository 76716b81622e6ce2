"""The command line (typer + rich). Formats output; decides nothing."""
