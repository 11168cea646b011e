from pg2qdrant.cli.main import program

program()
