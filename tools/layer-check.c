// SPDX-License-Identifier: MIT
/*
 * Linked with the whole of one layer's library and only the layers below
 * it: a call that runs the wrong way (common into fs, a provider into the
 * cache) leaves a symbol undefined and fails the build.
 */
int main(void)
{
	return 0;
}
