#include "candy.h"
#include "test.h"

void test_tls(void)
{
}
