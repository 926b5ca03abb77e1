from unigen.cli import main

main()
