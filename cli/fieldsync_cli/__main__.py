from fieldsync_cli.entry import run

run()
