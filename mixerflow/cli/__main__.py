from mixerflow.cli import main

main()
