"""The toolkit's command line (``npu``) and demo, above the machine (``npu``), the compiler, the runtime and the RTL."""
