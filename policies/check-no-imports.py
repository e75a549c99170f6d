#!/usr/bin/env python3
"""Check that WebAssembly modules meet Keyward policy ABI v1's static rules.

    python3 check-no-imports.py MODULE.wasm [MODULE.wasm ...]

For each module: a core module (not a component), at most 1 MiB, with NO
imports (section 2 absent or empty) and no start function, exporting `memory`
(its only memory: at most 16 MiB initially, 32-bit, not shared, 64 KiB
pages), `keyward_alloc: [i32] -> [i32]`, `keyward_evaluate: [i32 i32] -> [i64]`
and `keyward_policy_abi_v1: [] -> []`, with at most one table of at most
10,000 elements initially.
Prints one line per module; exits 1 if any module fails, 2 on usage errors.

Pure Python, no dependencies. It checks the module's shape only: the enclave
still validates and compiles it when it is uploaded (see ABI.md).
"""

import sys

MAX_MODULE_BYTES = 1 << 20
MAX_MEMORY_PAGES = 256  # 16 MiB in 64 KiB pages
MAX_TABLE_ELEMENTS = 10_000
MAGIC = b"\0asm"
CORE_VERSION = b"\x01\x00\x00\x00"

SECTION_IMPORT = 2
SECTION_TYPE = 1
SECTION_FUNCTION = 3
SECTION_TABLE = 4
SECTION_MEMORY = 5
SECTION_EXPORT = 7
SECTION_START = 8

VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128", 0x70: "funcref", 0x6F: "externref"}
EXTERN_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}

REQUIRED_FUNCS = {
    "keyward_alloc": (("i32",), ("i32",)),
    "keyward_evaluate": (("i32", "i32"), ("i64",)),
    "keyward_policy_abi_v1": ((), ()),
}


class Malformed(Exception):
    pass


class Reader:
    def __init__(self, data, pos=0, end=None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self):
        if self.pos >= self.end:
            raise Malformed("unexpected end of data")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def bytes(self, n):
        if n > self.end - self.pos:
            raise Malformed("unexpected end of data")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def uleb(self, bits=32):
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= bits + 7:
                raise Malformed("LEB128 integer too long")
        if result >= 1 << bits:
            raise Malformed("LEB128 integer out of range")
        return result

    def sleb(self, bits=33):
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= bits + 7:
                raise Malformed("LEB128 integer too long")
        if b & 0x40:
            result -= 1 << shift
        return result

    def name(self):
        raw = self.bytes(self.uleb())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Malformed(f"name is not UTF-8: {e}") from None

    def valtype(self):
        b = self.byte()
        if b in VALTYPES:
            return VALTYPES[b]
        if b in (0x63, 0x64):  # (ref null? heaptype), GC / function references
            self.sleb()
            return "ref"
        raise Malformed(f"unknown value type 0x{b:02x}")

    def limits(self):
        # flags: 0x01 maximum, 0x02 shared, 0x04 64-bit, 0x08 custom page size
        flags = self.byte()
        if flags & ~0x0F:
            raise Malformed(f"unknown limits flags 0x{flags:02x}")
        bits = 64 if flags & 0x04 else 32
        minimum = self.uleb(bits)
        maximum = self.uleb(bits) if flags & 0x01 else None
        if flags & 0x08:
            self.uleb()  # log2 of the page size
        return flags, minimum, maximum


def sections(data):
    r = Reader(data, 8)
    while r.pos < r.end:
        section_id = r.byte()
        size = r.uleb()
        start = r.pos
        r.bytes(size)
        yield section_id, Reader(data, start, start + size)


def describe_import(r):
    module = r.name()
    field = r.name()
    kind = r.byte()
    if kind == 0:  # func: type index
        r.uleb()
    elif kind == 1:  # table: reftype, limits
        r.valtype()
        r.limits()
    elif kind == 2:  # memory: limits
        r.limits()
    elif kind == 3:  # global: valtype, mutability
        r.valtype()
        r.byte()
    elif kind == 4:  # tag: attribute, type index
        r.byte()
        r.uleb()
    else:
        raise Malformed(f"unknown import kind {kind}")
    return f"{module}.{field} ({EXTERN_KINDS[kind]})"


def check(data):
    """Returns (problems, summary)."""
    problems = []
    if len(data) < 8 or data[:4] != MAGIC:
        return ["not a WebAssembly binary (bad magic)"], ""
    if data[4:8] != CORE_VERSION:
        return [f"not a core module (version/layer {data[4:8].hex()}; components are not ABI v1)"], ""
    if len(data) > MAX_MODULE_BYTES:
        problems.append(f"module is {len(data)} bytes, over the {MAX_MODULE_BYTES}-byte limit")

    types, func_types, memories, tables, exports, imports = [], [], [], [], {}, []
    for section_id, r in sections(data):
        if section_id == SECTION_IMPORT:
            for _ in range(r.uleb()):
                imports.append(describe_import(r))
        elif section_id == SECTION_TYPE:
            for _ in range(r.uleb()):
                form = r.byte()
                if form != 0x60:
                    types = None  # rec/sub types (GC): not read here
                    break
                params = tuple(r.valtype() for _ in range(r.uleb()))
                results = tuple(r.valtype() for _ in range(r.uleb()))
                types.append((params, results))
        elif section_id == SECTION_FUNCTION:
            func_types = [r.uleb() for _ in range(r.uleb())]
        elif section_id == SECTION_TABLE:
            table_count = r.uleb()
            if table_count > 1:
                problems.append(f"defines {table_count} tables: ABI v1 allows one")
            if table_count:
                # Only the first table is read (a table with an initializer
                # is 0x40 0x00 reftype limits expr: the expression is not read).
                if r.bytes(1) == b"\x40":
                    r.bytes(1)
                else:
                    r.pos -= 1
                r.valtype()
                tables.append(r.limits())
        elif section_id == SECTION_START:
            problems.append("has a start function: ABI v1 modules may not")
        elif section_id == SECTION_MEMORY:
            memories = [r.limits() for _ in range(r.uleb())]
        elif section_id == SECTION_EXPORT:
            for _ in range(r.uleb()):
                name = r.name()
                kind = r.byte()
                index = r.uleb()
                exports[name] = (kind, index)

    if imports:
        problems.append(f"has {len(imports)} import(s): {', '.join(imports)}")
        # Import counts shift every index space: skip the signature checks.
        return problems, ""

    memory = exports.get("memory")
    if memory is None or memory[0] != 2:
        problems.append("does not export a memory named `memory`")
    elif memory[1] >= len(memories):
        problems.append("exports a memory it does not define")
    else:
        flags, minimum, maximum = memories[memory[1]]
        if flags & 0x04:
            problems.append("memory is 64-bit (memory64): ABI v1 is 32-bit")
        if flags & 0x02:
            problems.append("memory is shared (threads): not allowed")
        if flags & 0x08:
            problems.append("memory has a custom page size: ABI v1 uses 64 KiB pages")
        if minimum > MAX_MEMORY_PAGES:
            problems.append(f"memory starts at {minimum} pages, over the {MAX_MEMORY_PAGES}-page (16 MiB) limit")
    if len(memories) > 1:
        problems.append(f"defines {len(memories)} memories: ABI v1 allows one")
    if tables and tables[0][1] > MAX_TABLE_ELEMENTS:
        problems.append(f"table starts at {tables[0][1]} elements, over the {MAX_TABLE_ELEMENTS}-element limit")

    for name, (params, results) in REQUIRED_FUNCS.items():
        export = exports.get(name)
        if export is None or export[0] != 0:
            problems.append(f"does not export the function `{name}`")
            continue
        index = export[1]
        if types is None:
            problems.append(f"`{name}`: the module's types use forms this checker cannot read")
            continue
        if index >= len(func_types) or func_types[index] >= len(types):
            problems.append(f"`{name}` refers to a function or type that is not defined")
            continue
        signature = types[func_types[index]]
        if signature != (params, results):
            problems.append(
                f"`{name}` has type [{' '.join(signature[0])}] -> [{' '.join(signature[1])}], "
                f"expected [{' '.join(params)}] -> [{' '.join(results)}]"
            )

    summary = ""
    if memories:
        summary = f", memory {memories[0][1]} pages initially"
    return problems, summary


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    failed = False
    for path in argv[1:]:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
        try:
            problems, summary = check(data)
        except Malformed as e:
            problems, summary = [f"malformed module: {e}"], ""
        if problems:
            failed = True
            for p in problems:
                print(f"FAIL {path}: {p}")
        else:
            print(f"ok   {path}: {len(data)} bytes, 0 imports, ABI v1 exports present{summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
