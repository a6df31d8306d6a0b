"""Verification of the generated Verilog: the cocotb testbench library (tb.py: driver, monitor, scoreboard;
funcov.py: functional coverage), the Verilator build and cocotb runs (runner.py), the `hwnorm sim` regression
(regression.py) and the soak (soak.py). The cocotb test modules the simulator loads by name ship beside them in
cocotb_tests/, so an installed wheel verifies a custom core without a source checkout."""
