from tunewiz.cli import main

main()
