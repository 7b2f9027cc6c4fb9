from diffrun.cli.app import entry

entry()
