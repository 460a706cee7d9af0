from promocodes.cli.main import main

main()
