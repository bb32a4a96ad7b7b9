import journal from './meta/_journal.json';
import m0000 from './0000_init.sql';
import m0001 from './0001_membership_periods.sql';
import m0002 from './0002_message_numbers_read_positions.sql';
import m0003 from './0003_receipts.sql';
import m0004 from './0004_request_hash.sql';
import m0005 from './0005_media_and_deletes.sql';
import m0006 from './0006_media_names_multipart.sql';

  export default {
    journal,
    migrations: {
      m0000,
m0001,
m0002,
m0003,
m0004,
m0005,
m0006
    }
  }
  