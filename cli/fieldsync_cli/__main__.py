from fieldsync_cli.main import main

main()
