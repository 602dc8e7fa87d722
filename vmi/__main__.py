from vmi.cli import main

main()
