#include "candy.h"
#include "test.h"

void test_peer(void)
{
}
