#!/usr/bin/env python3
"""Tests for check-no-imports.py on hand-assembled modules: python3 check-no-imports-test.py"""

import os
import subprocess
import sys
import tempfile
import unittest

CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check-no-imports.py")


def leb(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def section(section_id, content):
    return bytes([section_id]) + leb(len(content)) + content


def name(s):
    return leb(len(s)) + s.encode()


HEADER = b"\0asm\x01\0\0\0"
# Types: 0 [i32]->[i32], 1 [i32 i32]->[i64], 2 []->[], 3 [i32 i32]->[i32]
TYPES = section(1, leb(4) + b"\x60\x01\x7f\x01\x7f" + b"\x60\x02\x7f\x7f\x01\x7e" + b"\x60\x00\x00" + b"\x60\x02\x7f\x7f\x01\x7f")
MEMORY = section(5, leb(1) + b"\x00" + leb(17))
EXPORTS = [("memory", 2, 0), ("keyward_alloc", 0, 0), ("keyward_evaluate", 0, 1), ("keyward_policy_abi_v1", 0, 2)]


def functions(type_indices):
    return section(3, leb(len(type_indices)) + b"".join(leb(t) for t in type_indices))


def exports(entries):
    return section(7, leb(len(entries)) + b"".join(name(n) + bytes([k]) + leb(i) for n, k, i in entries))


def code(count):
    body = b"\x00\x0b"
    return section(10, leb(count) + b"".join(leb(len(body)) + body for _ in range(count)))


def module(funcs=(0, 1, 2), memory=MEMORY, export_list=EXPORTS, extra_before_exports=b"", extra_after_exports=b""):
    return HEADER + TYPES + functions(funcs) + extra_before_exports + memory + exports(export_list) + extra_after_exports + code(len(funcs))


class CheckerTest(unittest.TestCase):
    def run_checker(self, data):
        with tempfile.NamedTemporaryFile(suffix=".wasm", delete=False) as f:
            f.write(data)
        try:
            result = subprocess.run([sys.executable, CHECKER, f.name], capture_output=True, text=True)
        finally:
            os.unlink(f.name)
        return result.returncode, result.stdout

    def assert_fails(self, data, message):
        code, out = self.run_checker(data)
        self.assertEqual(code, 1, out)
        self.assertIn(message, out)

    def test_a_minimal_v1_module_passes(self):
        code, out = self.run_checker(module())
        self.assertEqual(code, 0, out)
        self.assertIn("0 imports", out)

    def test_imports_fail(self):
        imports = section(2, leb(1) + name("env") + name("now") + b"\x00" + leb(2))
        data = HEADER + TYPES + imports + functions((0, 1, 2)) + MEMORY
        data += exports([(n, k, i + 1 if k == 0 else i) for n, k, i in EXPORTS]) + code(3)
        self.assert_fails(data, "has 1 import(s): env.now (func)")

    def test_wrong_signature_fails(self):
        self.assert_fails(module(funcs=(0, 3, 2)), "`keyward_evaluate` has type [i32 i32] -> [i32]")

    def test_missing_marker_fails(self):
        self.assert_fails(module(export_list=EXPORTS[:3]), "`keyward_policy_abi_v1`")

    def test_start_function_fails(self):
        self.assert_fails(module(extra_after_exports=section(8, leb(2))), "start function")

    def test_memory_rules(self):
        self.assert_fails(module(memory=section(5, leb(1) + b"\x00" + leb(257))), "257 pages")
        self.assert_fails(module(memory=section(5, leb(1) + b"\x03" + leb(1) + leb(2))), "shared")
        self.assert_fails(module(memory=section(5, leb(1) + b"\x04" + leb(1))), "64-bit")
        self.assert_fails(module(memory=section(5, leb(2) + b"\x00\x01\x00\x01")), "2 memories")

    def test_table_rules(self):
        self.assertEqual(self.run_checker(module(extra_before_exports=section(4, leb(1) + b"\x70\x00" + leb(3))))[0], 0)
        self.assert_fails(module(extra_before_exports=section(4, leb(1) + b"\x70\x00" + leb(20000))), "20000")
        self.assert_fails(module(extra_before_exports=section(4, leb(2) + b"\x70\x00\x01\x70\x00\x01")), "2 tables")

    def test_non_modules_fail(self):
        self.assert_fails(b"\0asm\x0d\0\x01\0", "not a core module")
        self.assert_fails(b"hello world", "bad magic")
        self.assert_fails(module()[:-5], "malformed")
        self.assert_fails(module() + section(0, name("pad") + b"\0" * (1 << 20)), "over the 1048576-byte limit")


if __name__ == "__main__":
    unittest.main()
