from pushgate.cli import main

main()
