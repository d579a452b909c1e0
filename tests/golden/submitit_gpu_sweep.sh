#!/bin/bash

# Parameters
#SBATCH --account=proj123
#SBATCH --constraint=a100
#SBATCH --cpus-per-task=32
#SBATCH --error=<sweep dir>/.submitit/%j/%j_0_log.err
#SBATCH --gpus-per-node=8
#SBATCH --job-name=app
#SBATCH --mem=256GB
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=<sweep dir>/.submitit/%j/%j_0_log.out
#SBATCH --partition=gpu
#SBATCH --signal=USR2@120
#SBATCH --time=240
#SBATCH --wckey=submitit

# setup
module load cuda/12.4

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <sweep dir>/.submitit/%j/%j_%t_log.out --error <sweep dir>/.submitit/%j/%j_%t_log.err python -u job.py
