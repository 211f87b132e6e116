from d1.entry import main

main()
