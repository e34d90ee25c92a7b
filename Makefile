# trustmoe: one configure-less GNU Makefile.
#   make         build build/trustmoe (installs missing Debian packages first)
#   make test    build and run every test (unit, CLI, MPI)
#   make asan    the same test suite under AddressSanitizer/UBSan
#   make bench   benchmark programs; figures go to bench/RESULTS.md by hand
#   make fuzz    build the libFuzzer harnesses with clang and run each for
#                FUZZ_SECONDS (tests/fuzz/README.md)
#   make fuzz-smoke  the same for FUZZ_SMOKE_SECONDS (10) each: CI's short run
ifeq ($(origin CC),default)
CC := mpicc
endif
BUILD   ?= build
OPT     ?= -O2
# Baseline x86-64: the kernels carry their own AVX2/AVX-512 targets per
# function (core/kern_bf16.c, core/kernels.c) and pick one at run time.
CFLAGS  ?= $(OPT) -g
PKGS    := openblas cunit libcjson libutf8proc sqlite3 libprotobuf-c libmicrohttpd libcurl
PROTOC  ?= protoc-c
DEPS_OK := $(BUILD)/.deps-ok

WARN     := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes
# Sources are found by folder: every .c under these folders is part of the
# library, except the program's main (coordinator/cli/main.c).
SRC_DIRS := core proto engine cluster worker $(patsubst %/,%,$(sort $(dir $(wildcard coordinator/*/*.c))))
INC      := $(addprefix -I,$(SRC_DIRS)) -I$(BUILD)/gen
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = $(WARN) $(INC) $(PKG_CFLAGS) $(CFLAGS) -MMD -MP
LDLIBS    = $(PKG_LIBS) -lm -lpthread

PROTOS   := $(wildcard proto/*.proto)
GEN_C    := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
LIB_SRC  := $(filter-out coordinator/cli/main.c,$(wildcard $(addsuffix /*.c,$(SRC_DIRS))))
LIB_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(patsubst $(BUILD)/gen/%.c,$(BUILD)/obj/gen/%.o,$(GEN_C))
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
# each harness twice: a replay program with $(CC) for `make test`, and a
# libFuzzer binary with clang for `make fuzz`
FUZZ_NAMES  := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_REPLAY := $(patsubst %,$(BUILD)/fuzz/replay_%,$(FUZZ_NAMES))
FUZZ_BUILD  ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_FLAGS  := -O1 -g -march=x86-64-v3 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all

.PHONY: all deps test asan bench clean fuzz fuzz-build fuzz-smoke
# generated sources and objects are kept, not deleted as intermediates
.SECONDARY:
all: $(BUILD)/trustmoe

deps: $(DEPS_OK)
$(DEPS_OK): deploy/install-deps.sh
	@mkdir -p $(BUILD)
	./deploy/install-deps.sh
	@touch $@

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto | $(DEPS_OK)
	@mkdir -p $(BUILD)/gen
	$(PROTOC) --proto_path=proto --c_out=$(BUILD)/gen $<

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.c $(GEN_C) | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libtrustmoe.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/trustmoe: $(BUILD)/obj/coordinator/cli/main.o $(BUILD)/libtrustmoe.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/libtrustmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libtrustmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/fuzz/replay_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay.o $(BUILD)/libtrustmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# built under BUILD=$(FUZZ_BUILD) with CFLAGS carrying -fsanitize=fuzzer-no-link
$(BUILD)/fuzz/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/libtrustmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

test: $(BUILD)/trustmoe $(TEST_BIN) $(FUZZ_REPLAY)
	BUILD=$(BUILD) ./tests/run_tests.sh

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined" \
	    CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined" test

bench: $(BUILD)/trustmoe $(BENCH_BIN) $(BUILD)/bench/netdelay
	BUILD=$(BUILD) ./bench/run_bench.sh

# the delay switch of bench/mpi_latency.sh: plain C, no project library
$(BUILD)/bench/netdelay: bench/netdelay.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wall -Wextra -o $@ $<

# Open MPI's mpicc compiles with clang when OMPI_CC says so
fuzz-build:
	OMPI_CC=clang $(MAKE) BUILD=$(FUZZ_BUILD) CFLAGS="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link" \
	    $(patsubst %,$(FUZZ_BUILD)/fuzz/fuzz_%,$(FUZZ_NAMES))

fuzz: fuzz-build
	./tests/fuzz/run_fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_NAMES)

fuzz-smoke: fuzz-build
	./tests/fuzz/run_fuzz.sh $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS) $(FUZZ_NAMES)

clean:
	rm -rf build build-asan $(FUZZ_BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
