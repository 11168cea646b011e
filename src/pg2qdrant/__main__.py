from pg2qdrant.cli import main

main()
