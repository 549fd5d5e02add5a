// tests/conformance.cpp: every strata resource joins the conformance suite here, one line each.
#include "conformance.hpp"

namespace strata_test {
using page_subject = subject<strata::page_resource, os_upstream>;
}  // namespace strata_test

TYPE_TO_STRING_AS("page_resource", strata_test::page_subject);

namespace strata_test {
STRATA_CONFORMANCE(page_subject);
STRATA_CONFORMANCE_THREADS(page_subject);
}  // namespace strata_test
