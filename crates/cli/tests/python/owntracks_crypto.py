"""OwnTracks payload encryption done independently of cauldron: libsodium's secretbox through
PyNaCl, with the key derived as the apps derive it (the secret's bytes, zero-padded to 32).

    owntracks_crypto.py publish HOST PORT SECRET TOPIC JSON   encrypt JSON, publish it with paho-mqtt (QoS 1)
    owntracks_crypto.py seal SECRET JSON                      print the encrypted message
    owntracks_crypto.py open SECRET DATA                      print the plaintext of a `data` member
"""
import base64
import json
import sys

import nacl.secret
import nacl.utils


def box(secret):
    key = secret.encode()[:32].ljust(nacl.secret.SecretBox.KEY_SIZE, b"\0")
    return nacl.secret.SecretBox(key)


def seal(secret, plaintext):
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = box(secret).encrypt(plaintext.encode(), nonce)  # nonce || ciphertext+MAC
    return json.dumps({"_type": "encrypted", "data": base64.b64encode(bytes(sealed)).decode()})


def publish(host, port, topic, payload):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pynacl-test", protocol=mqtt.MQTTv311)
    client.connect(host, int(port))
    client.loop_start()
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(10)
    assert info.is_published(), "PUBACK not received"
    client.disconnect()
    client.loop_stop()


def main(argv):
    command = argv[1]
    if command == "publish":
        host, port, secret, topic, plaintext = argv[2:7]
        publish(host, port, topic, seal(secret, plaintext))
    elif command == "seal":
        print(seal(argv[2], argv[3]))
    elif command == "open":
        data = base64.b64decode(argv[3])
        print(box(argv[2]).decrypt(data[24:], data[:24]).decode())
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv)
