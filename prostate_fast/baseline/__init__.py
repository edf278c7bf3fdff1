"""The 2018 study's algorithms written plainly: slow references for tests and benchmarks.

These functions are deliberately naive (per-pixel Python loops, one OpenCV call per tile): they are
the yardstick the native kernels are checked and timed against, not something to use.
"""
