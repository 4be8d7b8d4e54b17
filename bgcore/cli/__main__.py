from bgcore.cli import main

main(prog_name="bgcore")
