"""The command layer: each `audiorep <command>` is one module's `main(argv)` here (or in
evaluate/cli.py, tasks/cli.py, demo.py); library modules never parse arguments."""
