#include "candy.h"
#include "test.h"

void test_ws(void)
{
}
