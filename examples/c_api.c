/* SPDX-License-Identifier: MIT */
/* examples/c_api.c: the C API (<strata/strata.h>) from C99: a word index whose occurrence nodes live in a capped
 * fixed pool, interned words in persistent memory, growing arrays on the default heap with sized free, and the
 * statistics of each at the end. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <strata/strata.h>

#define WORDS 6000    /* words of generated text; more occurrences than the node pool holds */
#define BUCKETS 256   /* hash buckets of the word table */
#define POOL_CAP 65536 /* the node pool's hard cap in bytes: one 64 KiB chunk, the smallest cap a pool takes */

/* One occurrence of a word: a position in the text. Every node comes from the capped pool. */
typedef struct occurrence {
  struct occurrence* next;
  size_t position;
} occurrence;

/* One distinct word. Entries come from the default heap and are freed with their size (sizeof(entry)). */
typedef struct entry {
  struct entry* next;      /* next entry in the same bucket */
  const char* word;        /* interned: persistent, never freed on its own */
  occurrence* occurrences; /* newest first */
  size_t count;
} entry;

static int failures = 0;
static void check(int ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "  FAILED: %s\n", what);
    ++failures;
  }
}

/* Deterministic text: each word is two or three of eight syllables (at most 576 distinct words). */
static const char* const syllables[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo"};
static uint64_t rng = 0x5eed;
static size_t next_word(char* out) {
  size_t n = 0, parts, i;
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  parts = 2 + (size_t)(rng % 2);
  for (i = 0; i < parts; ++i) {
    memcpy(out + n, syllables[(rng >> (8 + 3 * i)) % 8], 2);
    n += 2;
  }
  out[n] = '\0';
  return n;
}

static size_t hash(const char* s) {
  size_t h = 5381;
  while (*s) h = h * 33 + (unsigned char)*s++;
  return h % BUCKETS;
}

/* The entry for `word`, made on first sight (*made set) with its text copied to persistent memory. NULL when out of
 * memory. */
static entry* intern(entry** table, const char* word, size_t length, int* made) {
  const size_t b = hash(word);
  entry* e;
  char* copy;
  *made = 0;
  for (e = table[b]; e != NULL; e = e->next)
    if (strcmp(e->word, word) == 0) return e;
  copy = strata_persistent_malloc(length + 1); /* lives until exit (or strata_persistent_cleanup) */
  e = strata_malloc(sizeof *e);
  if (copy == NULL || e == NULL) {
    strata_free(e, sizeof *e); /* NULL is ignored; the persistent copy is simply not reused */
    return NULL;
  }
  memcpy(copy, word, length + 1);
  e->word = copy, e->occurrences = NULL, e->count = 0;
  e->next = table[b], table[b] = e;
  *made = 1;
  return e;
}

/* Counts misuse instead of aborting (the default handler prints one line and aborts). */
static int misuse_seen = 0;
static void count_misuse(const strata_misuse_t* m, void* context) {
  (void)context;
  ++misuse_seen;
  printf("  misuse handler: %s\n", m->message);
}

int main(void) {
  /* No init call: the default heap is made on first use. The index's nodes get a pool of their own with a hard
   * cap, as a mempool user would size one up front. */
  strata_resource_t* nodes = strata_fixed_pool_create(sizeof(occurrence), POOL_CAP, NULL);
  entry** table = strata_calloc(BUCKETS, sizeof *table);
  const char** text = NULL; /* the words in order, interned: a dynamic array grown with strata_realloc */
  size_t text_capacity = 0, recorded = 0, dropped = 0, distinct = 0, walked = 0, persistent_bytes = 0, i;
  int pool_full = 0;
  entry* top = NULL;
  strata_stats_t pool_stats, heap_stats, persistent_stats;

  printf("strata example: the C API, a word index over a %d-byte node pool\n", POOL_CAP);
  if (nodes == NULL || table == NULL) {
    fprintf(stderr, "  setup failed: %s\n", strata_error_string(strata_last_error()));
    return 1;
  }
  for (i = 0; i < WORDS; ++i) {
    char word[8];
    const size_t length = next_word(word);
    int made;
    entry* e = intern(table, word, length, &made);
    occurrence* o;
    if (e == NULL) return 1;
    if (made) ++distinct, persistent_bytes += length + 1;
    if (i == text_capacity) { /* double the array; on failure the old block is still valid */
      const size_t bigger = text_capacity ? 2 * text_capacity : 16;
      const char** grown = strata_realloc(text, text_capacity * sizeof *text, bigger * sizeof *text);
      if (grown == NULL) return 1;
      text = grown, text_capacity = bigger;
    }
    text[i] = e->word;
    /* A full pool returns NULL (ENOMEM) and is otherwise unharmed: the index stops recording, the text goes on. */
    o = pool_full ? NULL : strata_resource_malloc(nodes, sizeof *o);
    if (o == NULL) {
      if (!pool_full) { /* read the error before anything else can change errno */
        const strata_error_t error = strata_last_error();
        const int error_number = errno;
        printf("  node pool full after %zu occurrences (%s, errno %s)\n", recorded, strata_error_string(error),
               error_number == ENOMEM ? "ENOMEM" : "not ENOMEM");
        check(error == STRATA_ENOMEM && error_number == ENOMEM, "a full pool fails with ENOMEM");
      }
      pool_full = 1, ++dropped;
      continue;
    }
    o->position = i, o->next = e->occurrences, e->occurrences = o, ++e->count, ++recorded;
  }

  /* Every recorded occurrence points back at its own word in the text (interned words compare by address). */
  for (i = 0; i < BUCKETS; ++i) {
    entry* e;
    for (e = table[i]; e != NULL; e = e->next) {
      const occurrence* o;
      for (o = e->occurrences; o != NULL; o = o->next, ++walked)
        check(o->position < WORDS && text[o->position] == e->word, "an occurrence names its word");
      if (top == NULL || e->count > top->count) top = e;
    }
  }
  printf("  %d words, %zu distinct; %zu occurrences indexed, %zu dropped; most indexed \"%s\" (%zu times)\n", WORDS,
         distinct, recorded, dropped, top ? top->word : "", top ? top->count : 0);
  check(pool_full && recorded > 0 && recorded + dropped == WORDS && walked == recorded, "every word counted once");

  strata_resource_stats(nodes, &pool_stats);
  printf("  %-22s in use %7zu B  held %7zu B  allocations %6" PRIu64 "  failed %" PRIu64 "\n",
         strata_resource_name(nodes), pool_stats.bytes_in_use, pool_stats.bytes_held, pool_stats.allocations,
         pool_stats.failed_allocations);
  check(pool_stats.allocations == recorded && pool_stats.failed_allocations == 1, "pool counts");
  check(pool_stats.bytes_held <= POOL_CAP, "the pool stays under its cap");
  /* The index is done: the pool goes at once, every node with it, without walking the lists. */
  strata_resource_destroy(nodes);

  /* Entries and arrays go back to the default heap with the sizes they were allocated with. */
  for (i = 0; i < BUCKETS; ++i) {
    entry* e = table[i];
    while (e != NULL) {
      entry* next = e->next;
      strata_free(e, sizeof *e);
      e = next;
    }
  }
  strata_free(text, text_capacity * sizeof *text);
  strata_free(table, BUCKETS * sizeof *table);

  strata_stats(&heap_stats);
  strata_persistent_stats(&persistent_stats);
  printf("  %-22s in use %7zu B  peak %7zu B  allocations %6" PRIu64 "  frees %" PRIu64 "\n", "default heap",
         heap_stats.bytes_in_use, heap_stats.peak_bytes_in_use, heap_stats.allocations, heap_stats.deallocations);
  printf("  %-22s in use %7zu B  held %7zu B  allocations %6" PRIu64 "\n", "persistent", persistent_stats.bytes_in_use,
         persistent_stats.bytes_held, persistent_stats.allocations);
  check(heap_stats.bytes_in_use == 0 && heap_stats.allocations == heap_stats.deallocations, "default heap empty");
  check(persistent_stats.bytes_in_use == persistent_bytes && persistent_stats.allocations == distinct,
        "persistent bytes are the interned words");

  /* Misuse is reported, not silently absorbed: a handler that returns makes the call do nothing. */
  strata_set_misuse_handler(count_misuse, NULL);
  {
    void* p = strata_malloc(40);
    strata_free(p, 40);
    strata_free(p, 40); /* a double free, on purpose */
    check(misuse_seen == 1 && strata_last_error() == STRATA_EMISUSE, "the double free was reported");
  }
  strata_set_misuse_handler(NULL, NULL); /* back to print-and-abort */

  printf("  %s\n", failures == 0 ? "all checks passed" : "some checks FAILED");
  return failures == 0 ? 0 : 1;
}
