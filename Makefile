# gokit: make builds everything under build/.  See README.md.
PREFIX ?= /usr/local
DESTDIR ?=
BUILD ?= build
CC ?= cc
WERROR ?= -Werror
SAN_FLAGS ?=
OPT ?= -O2
CFLAGS ?= $(OPT) -g
CFLAGS += -DGK_LIBEXEC='"$(PREFIX)/libexec/gokit"'
CFLAGS += -std=c17 -D_GNU_SOURCE -Wall -Wextra $(WERROR) -fPIC -fno-semantic-interposition -Ilib $(SAN_FLAGS)
LDFLAGS += -Wl,--as-needed $(SAN_FLAGS)
LIBS = -lhttp_parser -ljq -lpipeline -lhiredis -lcurl -lcares -lz -lpthread -lm
LIBS_gk-export-kafka = -lrdkafka

LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
BIN_SRC := $(wildcard bin/*.c)
BINS := $(BIN_SRC:bin/%.c=$(BUILD)/bin/%)
EX_SRC := $(wildcard contrib/examples/*.c)
EXAMPLES := $(EX_SRC:contrib/examples/%.c=$(BUILD)/examples/%)
EXP_SRC := $(wildcard exporters/*.c)
EXPORTERS := $(EXP_SRC:exporters/%.c=$(BUILD)/exporters/%)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNITS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
MAN_SRC := $(wildcard man/*.[1-9])
MAN_OUT := $(MAN_SRC:man/%=$(BUILD)/man/%)

all: $(BUILD)/libgokit.a $(BUILD)/libgokit.so $(BINS) $(EXAMPLES) $(EXPORTERS) $(UNITS) $(BUILD)/gokit.pc man

$(BUILD)/lib/%.o: lib/%.c lib/gokit.h $(wildcard lib/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libgokit.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/libgokit.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libgokit.so.0 $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bin/%: bin/%.c $(BUILD)/libgokit.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libgokit.a $(LIBS) $(LIBS_$*)

$(BUILD)/exporters/%: exporters/%.c $(BUILD)/libgokit.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libgokit.a $(LIBS) $(LIBS_$*)

$(BUILD)/examples/%: contrib/examples/%.c $(BUILD)/libgokit.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libgokit.a $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/unit.h $(BUILD)/libgokit.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -Itests/unit -o $@ $< $(BUILD)/libgokit.a $(LIBS) -ljansson

# A test helper, not a unit test (tests/run runs only build/tests/test_*).
all: $(BUILD)/tests/kafka-mock
$(BUILD)/tests/kafka-mock: tests/helpers/kafka-mock.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lrdkafka

$(BUILD)/gokit.pc: contrib/gokit.pc.in
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|0.1.0|g' $< > $@

man: $(MAN_OUT)
$(BUILD)/man/%: man/%
	@mkdir -p $(dir $@)
	mandoc -Tlint -Wwarning $< >/dev/null 2>&1 || mandoc -Tlint -Wwarning $< || true
	cp $< $@

deps:
	contrib/install-deps

test: deps all
	tests/run $(BUILD)

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN_FLAGS="-fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=undefined,float-cast-overflow" all
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 GK_SANITIZED=1 tests/run build-asan

FUZZ_CFLAGS = -std=c17 -D_GNU_SOURCE -DGK_LIBEXEC='"$(PREFIX)/libexec/gokit"' -g -O1 -Ilib -fsanitize=fuzzer,address,undefined
fuzz:
	@mkdir -p $(BUILD)/fuzz
	clang $(FUZZ_CFLAGS) -o $(BUILD)/fuzz/fuzz_wire fuzz/fuzz_wire.c $(LIB_SRC) $(LIBS) -ljansson
	clang $(FUZZ_CFLAGS) -o $(BUILD)/fuzz/fuzz_http fuzz/fuzz_http.c $(LIB_SRC) $(LIBS)
	clang $(FUZZ_CFLAGS) -o $(BUILD)/fuzz/fuzz_events fuzz/fuzz_events.c $(LIB_SRC) $(LIBS) -ljansson
	clang $(FUZZ_CFLAGS) -o $(BUILD)/fuzz/fuzz_tracecontext fuzz/fuzz_tracecontext.c $(LIB_SRC) $(LIBS)
	clang $(FUZZ_CFLAGS) -o $(BUILD)/fuzz/fuzz_upstream fuzz/fuzz_upstream.c $(LIB_SRC) $(LIBS)
	@mkdir -p $(BUILD)/fuzz/new-wire $(BUILD)/fuzz/new-http $(BUILD)/fuzz/new-events \
		$(BUILD)/fuzz/new-tracecontext $(BUILD)/fuzz/new-upstream
	# new inputs go to the first directory, under build/: the checked-in
	# seeds stay as they are
	$(BUILD)/fuzz/fuzz_wire -max_total_time=$${FUZZ_SECONDS:-60} -max_len=4096 $(BUILD)/fuzz/new-wire fuzz/corpus/wire
	$(BUILD)/fuzz/fuzz_http -max_total_time=$${FUZZ_SECONDS:-60} -max_len=8192 $(BUILD)/fuzz/new-http fuzz/corpus/http
	$(BUILD)/fuzz/fuzz_events -max_total_time=$${FUZZ_SECONDS:-60} -max_len=8192 $(BUILD)/fuzz/new-events fuzz/corpus/events
	$(BUILD)/fuzz/fuzz_tracecontext -max_total_time=$${FUZZ_SECONDS:-60} -max_len=1024 $(BUILD)/fuzz/new-tracecontext fuzz/corpus/tracecontext
	$(BUILD)/fuzz/fuzz_upstream -max_total_time=$${FUZZ_SECONDS:-60} -max_len=16384 $(BUILD)/fuzz/new-upstream fuzz/corpus/upstream

run: deps all
	contrib/run-demo $(BUILD)

bench: deps all
	bench/run $(BUILD)
	bench/filter $(BUILD)
	bench/client $(BUILD)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	  $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/libexec/gokit \
	  $(DESTDIR)$(PREFIX)/share/gokit/filters
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libgokit.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libgokit.so $(DESTDIR)$(PREFIX)/lib/libgokit.so.0
	ln -sf libgokit.so.0 $(DESTDIR)$(PREFIX)/lib/libgokit.so
	install -m 644 lib/gokit.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/gokit.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	for f in $(MAN_OUT); do s=$${f##*.}; install -d $(DESTDIR)$(PREFIX)/share/man/man$$s; \
	  install -m 644 $$f $(DESTDIR)$(PREFIX)/share/man/man$$s/; done
	for f in $(EXPORTERS); do install -m 755 $$f $(DESTDIR)$(PREFIX)/libexec/gokit/; done
	install -d $(DESTDIR)$(PREFIX)/libexec/gokit/examples
	install -m 755 $(EXAMPLES) contrib/examples/*.cgi $(DESTDIR)$(PREFIX)/libexec/gokit/examples/
	for f in $(wildcard filters/*.jq); do install -m 644 $$f $(DESTDIR)$(PREFIX)/share/gokit/filters/; done

format:
	clang-format -i lib/*.c lib/*.h bin/*.c contrib/examples/*.c tests/unit/*.c tests/unit/*.h

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr -D_GNU_SOURCE --suppress=missingIncludeSystem -Ilib lib bin exporters contrib/examples

clean:
	rm -rf build build-asan

.PHONY: all man deps test asan fuzz run bench install format lint clean
