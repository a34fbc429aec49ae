// Tiny admin helper for the CI broker, run with Java's source launcher:
//   java -cp '<libs>/*' .ci/kafka/KafkaAdmin.java <bootstrap> create-topic NAME [PARTITIONS]
//   java -cp '<libs>/*' .ci/kafka/KafkaAdmin.java <bootstrap> list-topics
// Why: kafka-tools (TopicCommand) is not on Maven Central for the pinned
// Kafka version, and the broker runs with auto.create.topics.enable=false,
// so kcat alone cannot create topics. kafka-clients' Admin API is in libs.
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;

public class KafkaAdmin {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: KafkaAdmin <bootstrap> create-topic NAME [PARTITIONS] | list-topics");
            System.exit(2);
        }
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        try (Admin admin = Admin.create(p)) {
            switch (args[1]) {
                case "create-topic": {
                    int partitions = args.length > 3 ? Integer.parseInt(args[3]) : 1;
                    try {
                        admin.createTopics(List.of(new NewTopic(args[2], partitions, (short) 1))).all().get();
                        System.out.println("created topic " + args[2] + " (" + partitions + " partitions)");
                    } catch (ExecutionException e) {
                        if (!(e.getCause() instanceof TopicExistsException)) throw e;
                        System.out.println("topic " + args[2] + " already exists");
                    }
                    break;
                }
                case "list-topics":
                    admin.listTopics().names().get().stream().sorted().forEach(System.out::println);
                    break;
                default:
                    System.err.println("unknown command " + args[1]);
                    System.exit(2);
            }
        }
    }
}
