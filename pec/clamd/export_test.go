package clamd

var ParseReplyForTest = parseReply
