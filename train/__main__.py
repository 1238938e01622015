from train.train import main

main()
