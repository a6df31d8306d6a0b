"""The cocotb test modules (loaded by the simulator by name, hwnorm.verify.cocotb_tests.<module>): test_norm (every
kind), test_axi (the AXI4-Stream wrapper), soak_norm (the protocol soak), bench_norm (the cocotb rate of hwnorm bench)."""
