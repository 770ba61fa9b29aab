package main

func main() { println("hello from app") }
