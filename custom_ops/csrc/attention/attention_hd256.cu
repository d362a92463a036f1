// The attention kernels at head_dim 256 (a translation unit per head_dim: see attention_launch.h).
#include "attention_launch.cuh"

FASTATTN_ATTENTION_HEAD_DIM(256)
