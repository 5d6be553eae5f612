from voltool.cli.app import main

main()
