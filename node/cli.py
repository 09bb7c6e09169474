def main():
    print("beanraft")
