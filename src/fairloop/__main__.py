from fairloop.cli import main

main()
