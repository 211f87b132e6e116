from d1.cli import main

main()
