from diffrun.cli.app import main

main()
